//! Composite tools against slow servers: the workshop's table (three 500 ms calls run
//! sequentially, in parallel, and in parallel with the whole result cached), and fan-out over 10
//! and 100 customers at 50 ms each. Every figure comes with the orchestrator's own overhead: the
//! wall time of the call minus the ideal (the sum of the children when they depend on each other,
//! the slowest child when they do not, nothing for a cache hit).
//!
//! Run: `cargo bench -p mcp-orchestrator --bench composites`
//!
//! The gateway runs in this process (`Gateway::start` on a config built here); the three servers
//! are its stdio children from `target/release/`, started with `--latency-ms` (see
//! `kit::faults`). They are built with `cargo build --release --bins` when missing.
//! The children's latencies are taken from each result's `_meta.sources[*].latencyMs`, so the
//! overhead is the executor's scheduling, the composite's input check, output rendering and
//! result building: what the orchestrator adds on top of the upstream calls themselves.
//!
//! Knobs (environment): `COMPOSITES_RUNS` (default 5) timed runs per pattern after one warm-up,
//! `COMPOSITES_HITS` (default 1000) extra cache hits for the hit's percentiles. Without `--bench`
//! (`cargo test --benches`) it runs a short smoke pass with small latencies.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{StreamExt, stream};
use orchestrator::{config::Config, gateway::Gateway, upstream::CallContext};
use rmcp::model::{CallToolResult, JsonObject};
use serde_json::{Value, json};

const SERVERS: [&str; 3] = ["sql-mcp-server", "cosmos-mcp-server", "rest-mcp-server"];
const AIM_PARALLEL_OVERHEAD_MS: f64 = 5.0;
const AIM_CACHE_HIT_MS: f64 = 1.0;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// The three servers next to the bench ([`kit::binaries`]: `target/release` under `cargo bench`),
/// built (in the bench's own profile) when one is missing.
fn ensure_binaries() -> anyhow::Result<PathBuf> {
    let dir = kit::binaries::dir()?;
    let present = || {
        SERVERS
            .iter()
            .all(|b| kit::binaries::path_in(&dir, b).exists())
    };
    if !present() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--bins"]);
        for b in SERVERS {
            build.args(["-p", b]);
        }
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        if !build.status().context("running cargo build")?.success() {
            bail!("cargo build of {SERVERS:?} failed");
        }
    }
    for b in SERVERS {
        let path = kit::binaries::path_in(&dir, b);
        if !path.exists() {
            bail!("{} not found after building", path.display());
        }
    }
    Ok(dir)
}

/// One stdio server entry of `mcpServers`.
fn server(dir: &Path, bin: &str, args: &[&str], latency_ms: u64) -> Value {
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    args.extend(["--latency-ms".to_owned(), latency_ms.to_string()]);
    json!({
        "command": kit::binaries::path_in(dir, bin).display().to_string(),
        "args": args,
        "env": { "RUST_LOG": "warn" }
    })
}

/// The shared `orchestrator` defaults: no retries (no noise), timeouts well above the latencies,
/// room for a fan-out of 100.
fn defaults() -> Value {
    json!({
        "timeoutMs": 10_000,
        "retry": { "maxAttempts": 1 },
        "circuitBreaker": { "consecutiveFailures": 0 },
        "bulkhead": { "maxConcurrent": 64, "maxQueue": 256 }
    })
}

/// Config for the workshop part: three servers at `latency_ms` each and three composites.
fn workshop_config(dir: &Path, latency_ms: u64) -> Value {
    let three = json!({
        "orders": { "call": "sql.get_order_details", "args": { "orderId": "${input.orderId}" }, "critical": true },
        "behavior": { "call": "cosmos.get_user_behavior", "args": { "userId": "${input.userId}" }, "critical": true },
        "product": { "call": "rest.get_product", "args": { "productId": "${input.productId}" }, "critical": true }
    });
    let three_input = json!({
        "type": "object",
        "properties": {
            "orderId": { "type": "string" },
            "userId": { "type": "string" },
            "productId": { "type": "string" }
        },
        "required": ["orderId", "userId", "productId"],
        "additionalProperties": false
    });
    let three_output = json!({
        "order": "${orders}", "behavior": "${behavior}", "product": "${product}"
    });
    json!({
        "mcpServers": {
            "sql": server(dir, "sql-mcp-server", &["--data-dir", ":memory:"], latency_ms),
            "cosmos": server(dir, "cosmos-mcp-server", &["--data-dir", ":memory:", "--ru-per-second", "1000000"], latency_ms),
            "rest": server(dir, "rest-mcp-server", &[], latency_ms)
        },
        "orchestrator": {
            "listen": "127.0.0.1:0",
            "toolNameSeparator": "__",
            "defaults": defaults(),
            "composites": {
                "sequential": {
                    "description": "Order, then the buyer's behaviour, then a product: each call reads the one before.",
                    "input": {
                        "type": "object",
                        "properties": { "orderId": { "type": "string" } },
                        "required": ["orderId"],
                        "additionalProperties": false
                    },
                    "deadlineMs": 20_000,
                    "steps": {
                        "order": { "call": "sql.get_order_details", "args": { "orderId": "${input.orderId}" }, "critical": true },
                        "behavior": { "call": "cosmos.get_user_behavior", "args": { "userId": "${order.customerId}" }, "critical": true },
                        // `behavior` has no such field, so the product is the order's first one;
                        // the reference still makes this step wait for `behavior`.
                        "product": {
                            "call": "rest.get_product",
                            "args": { "productId": { "$default": ["${behavior.benchNoSuchField}", "${order.lines[0].productId}"] } },
                            "critical": true
                        }
                    },
                    "output": { "order": "${order}", "behavior": "${behavior}", "product": "${product}" }
                },
                "parallel": {
                    "description": "The same three calls, independent of each other.",
                    "input": three_input.clone(),
                    "deadlineMs": 20_000,
                    "steps": three.clone(),
                    "output": three_output.clone()
                },
                "parallel_cached": {
                    "description": "The parallel composite, its whole result cached.",
                    "input": three_input,
                    "deadlineMs": 20_000,
                    "cache": "short",
                    "steps": three,
                    "output": three_output
                }
            }
        }
    })
}

/// Config for the fan-out part: SQL without added latency, Cosmos at `latency_ms`, and one
/// composite per concurrency.
fn fanout_config(dir: &Path, latency_ms: u64, concurrencies: &[usize]) -> Value {
    let composites: serde_json::Map<String, Value> = concurrencies
        .iter()
        .map(|&c| {
            (
                format!("fanout_c{c}"),
                json!({
                    "description": format!("Top customers, each analysed, {c} at a time."),
                    "input": {
                        "type": "object",
                        "properties": { "limit": { "type": "integer", "minimum": 1, "maximum": 200 } },
                        "required": ["limit"],
                        "additionalProperties": false
                    },
                    "deadlineMs": 20_000,
                    "steps": {
                        "top": { "call": "sql.get_top_customers", "args": { "limit": "${input.limit}" }, "critical": true },
                        "analysis": {
                            "call": "cosmos.analyze_user_behavior",
                            "forEach": "${top.customers}",
                            "as": "customer",
                            "concurrency": c,
                            "critical": true,
                            "args": { "customerId": "${customer.customerId}" }
                        }
                    },
                    "output": { "customers": { "$zip": { "items": "${top.customers}", "with": "${analysis}", "as": "behavior" } } }
                }),
            )
        })
        .collect();
    json!({
        "mcpServers": {
            "sql": server(dir, "sql-mcp-server", &["--data-dir", ":memory:"], 0),
            "cosmos": server(dir, "cosmos-mcp-server", &["--data-dir", ":memory:", "--ru-per-second", "1000000"], latency_ms)
        },
        "orchestrator": {
            "listen": "127.0.0.1:0",
            "toolNameSeparator": "__",
            "defaults": defaults(),
            "composites": composites
        }
    })
}

async fn start(config: &Value, dir: &Path) -> anyhow::Result<Arc<Gateway>> {
    let config = Config::parse(&config.to_string(), dir, &|_| None)
        .map_err(|e| anyhow::anyhow!("bench config: {e}"))?;
    let gateway = Gateway::start(config);
    if !gateway.wait_ready(Duration::from_secs(60)).await {
        gateway.shutdown().await;
        bail!("not every server connected within 60 s");
    }
    Ok(gateway)
}

fn object(v: Value) -> Option<JsonObject> {
    match v {
        Value::Object(o) => Some(o),
        _ => None,
    }
}

/// One timed call.
struct Sample {
    wall_ms: f64,
    /// `_meta.sources[*].latencyMs`, by step name.
    children: Vec<(String, f64)>,
    /// `_meta.cached`: answered from the cache.
    cached: bool,
}

impl Sample {
    fn child(&self, step: &str) -> f64 {
        self.children
            .iter()
            .find(|(s, _)| s == step)
            .map_or(0.0, |&(_, ms)| ms)
    }
    fn sum(&self) -> f64 {
        self.children.iter().map(|(_, ms)| ms).sum()
    }
    fn max(&self) -> f64 {
        self.children.iter().map(|&(_, ms)| ms).fold(0.0, f64::max)
    }
}

async fn call(
    gateway: &Gateway,
    name: &str,
    arguments: &Value,
    cx: &CallContext,
) -> anyhow::Result<Sample> {
    let args = object(arguments.clone());
    let started = Instant::now();
    let result = gateway.call_tool(name, args, cx).await;
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let result = result.map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    check(name, &result)?;
    let meta = result.meta.as_ref().map(|m| &m.0);
    let children = meta
        .and_then(|m| m.get("sources"))
        .and_then(Value::as_array)
        .map(|sources| {
            sources
                .iter()
                .map(|s| {
                    (
                        s["step"].as_str().unwrap_or_default().to_owned(),
                        s["latencyMs"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let cached = meta
        .and_then(|m| m.get("cached"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Sample {
        wall_ms,
        children,
        cached,
    })
}

fn check(name: &str, result: &CallToolResult) -> anyhow::Result<()> {
    if result.is_error == Some(true) {
        let text: Vec<&str> = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
            .collect();
        bail!("{name} failed: {}", text.join("\n"));
    }
    if result.structured_content.is_none() {
        bail!("{name}: no structured content");
    }
    Ok(())
}

fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied().unwrap_or(0.0)
}

/// The figures of one pattern: median wall, median ideal, median of the per-run overheads.
struct Row {
    label: String,
    wall: f64,
    ideal: f64,
    overhead: f64,
    overhead_min: f64,
    overhead_max: f64,
    note: String,
}

fn row(label: &str, samples: &[Sample], ideal: impl Fn(&Sample) -> f64, note: String) -> Row {
    let overheads: Vec<f64> = samples.iter().map(|s| s.wall_ms - ideal(s)).collect();
    Row {
        label: label.to_owned(),
        wall: median(samples.iter().map(|s| s.wall_ms)),
        ideal: median(samples.iter().map(&ideal)),
        overhead: median(overheads.iter().copied()),
        overhead_min: overheads.iter().copied().fold(f64::INFINITY, f64::min),
        overhead_max: overheads.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        note,
    }
}

fn children_note(samples: &[Sample], steps: &[&str]) -> String {
    steps
        .iter()
        .map(|s| format!("{s} {:.1}", median(samples.iter().map(|x| x.child(s)))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Milliseconds with enough decimals to show sub-millisecond figures.
fn fmt_ms(ms: f64) -> String {
    if ms.abs() < 10.0 {
        format!("{ms:.3}")
    } else {
        format!("{ms:.1}")
    }
}

fn table() -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t
}

/// What to measure.
#[derive(Debug, Clone, Copy)]
struct Settings {
    runs: usize,
    hits: usize,
    workshop_latency_ms: u64,
    fanout_latency_ms: u64,
    customers: &'static [usize],
    concurrencies: &'static [usize],
}

async fn workshop(dir: &Path, s: Settings) -> anyhow::Result<(f64, f64)> {
    let latency = s.workshop_latency_ms;
    let gateway = start(&workshop_config(dir, latency), dir).await?;
    let cx = CallContext::default();
    let outcome = async {
        // Real ids from the data: an order, its buyer and its first product.
        let order_id = "ORD-00042";
        let order = gateway
            .call_tool(
                "sql__get_order_details",
                object(json!({ "orderId": order_id })),
                &cx,
            )
            .await?;
        check("sql__get_order_details", &order)?;
        let order = order.structured_content.unwrap_or_default();
        let user_id = order["customerId"].as_str().context("order.customerId")?;
        let product_id = order["lines"][0]["productId"]
            .as_str()
            .context("order.lines[0].productId")?;
        let seq_args = json!({ "orderId": order_id });
        let par_args = json!({ "orderId": order_id, "userId": user_id, "productId": product_id });

        let (mut seq, mut par, mut hit) = (Vec::new(), Vec::new(), Vec::new());
        call(&gateway, "sequential", &seq_args, &cx).await?; // warm-up
        call(&gateway, "parallel", &par_args, &cx).await?; // warm-up
        // Alternate the two, so both see the same machine.
        for _ in 0..s.runs {
            seq.push(call(&gateway, "sequential", &seq_args, &cx).await?);
            par.push(call(&gateway, "parallel", &par_args, &cx).await?);
        }
        // The first call fills the cache; the following ones are hits.
        let miss = call(&gateway, "parallel_cached", &par_args, &cx).await?;
        if miss.cached {
            bail!("the first call of parallel_cached was already a hit");
        }
        for _ in 0..s.runs {
            let h = call(&gateway, "parallel_cached", &par_args, &cx).await?;
            if !h.cached {
                bail!("a repeated call of parallel_cached missed the cache");
            }
            hit.push(h);
        }
        let mut hit_ms = Vec::with_capacity(s.hits);
        for _ in 0..s.hits {
            hit_ms.push(
                call(&gateway, "parallel_cached", &par_args, &cx)
                    .await?
                    .wall_ms,
            );
        }

        let seq_steps = ["order", "behavior", "product"];
        let par_steps = ["orders", "behavior", "product"];
        let rows = [
            row(
                "sequential (3 dependent calls)",
                &seq,
                Sample::sum,
                format!("sum of {}", children_note(&seq, &seq_steps)),
            ),
            row(
                "parallel (3 independent calls)",
                &par,
                Sample::max,
                format!("max of {}", children_note(&par, &par_steps)),
            ),
            row(
                "parallel + cache (2nd call on)",
                &hit,
                |_| 0.0,
                format!(
                    "hit; first call (miss) {:.1} ms, {} more hits: p50 {:.3} p99 {:.3} ms",
                    miss.wall_ms,
                    s.hits,
                    quantile(&hit_ms, 0.5),
                    quantile(&hit_ms, 0.99)
                ),
            ),
        ];
        let mut t = table();
        t.set_header([
            "pattern",
            &format!("measured ms (median of {})", s.runs),
            "ideal ms",
            "overhead ms (median [min..max])",
            "children ms (median)",
        ]);
        for r in &rows {
            t.add_row([
                r.label.clone(),
                fmt_ms(r.wall),
                fmt_ms(r.ideal),
                format!(
                    "{} [{}..{}]",
                    fmt_ms(r.overhead),
                    fmt_ms(r.overhead_min),
                    fmt_ms(r.overhead_max)
                ),
                r.note.clone(),
            ]);
        }
        println!();
        println!(
            "workshop: three calls (sql.get_order_details, cosmos.get_user_behavior, \
             rest.get_product), each server at --latency-ms {latency}"
        );
        println!("{t}");
        println!(
            "sequential vs parallel: {:.1} ms vs {:.1} ms ({:.2}x)",
            rows[0].wall,
            rows[1].wall,
            rows[0].wall / rows[1].wall.max(f64::EPSILON)
        );
        Ok::<_, anyhow::Error>((
            rows[1].overhead,
            // Every hit timed: the few of the table and the many after them.
            median(hit.iter().map(|h| h.wall_ms).chain(hit_ms.iter().copied())),
        ))
    }
    .await;
    gateway.shutdown().await;
    outcome
}

/// The same calls as a fan-out composite, made here without the executor: the top customers,
/// then one analysis per customer, `concurrency` at a time, each through `Gateway::call_tool`
/// (the same cache → policy → upstream path). Its wall time is what the children really take on
/// this machine at this concurrency (server work and stdio included), the fairest ideal.
async fn direct_fanout(
    gateway: &Gateway,
    n: usize,
    concurrency: usize,
    cx: &CallContext,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let top = gateway
        .call_tool("sql__get_top_customers", object(json!({ "limit": n })), cx)
        .await?;
    check("sql__get_top_customers", &top)?;
    let top = top.structured_content.unwrap_or_default();
    let ids: Vec<&str> = top["customers"]
        .as_array()
        .context("top.customers")?
        .iter()
        .filter_map(|c| c["customerId"].as_str())
        .collect();
    let results: Vec<_> = stream::iter(ids)
        .map(|id| {
            gateway.call_tool(
                "cosmos__analyze_user_behavior",
                object(json!({ "customerId": id })),
                cx,
            )
        })
        .buffered(concurrency)
        .collect()
        .await;
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    if results.len() != n {
        bail!("expected {n} customers, got {}", results.len());
    }
    for r in results {
        check("cosmos__analyze_user_behavior", &r?)?;
    }
    Ok(wall_ms)
}

async fn fanout(dir: &Path, s: Settings) -> anyhow::Result<()> {
    let latency = s.fanout_latency_ms as f64;
    let gateway = start(
        &fanout_config(dir, s.fanout_latency_ms, s.concurrencies),
        dir,
    )
    .await?;
    let cx = CallContext::default();
    let outcome = async {
        let mut t = table();
        t.set_header([
            "customers",
            "concurrency",
            &format!("measured ms (median of {})", s.runs),
            "ideal ms",
            "overhead ms",
            "per item µs",
            "top ms / fan-out step ms (median)",
            "same calls, no composite ms",
            "composite − those ms",
        ]);
        for &n in s.customers {
            for &c in s.concurrencies {
                let name = format!("fanout_c{c}");
                let args = json!({ "limit": n });
                call(&gateway, &name, &args, &cx).await?; // warm-up
                direct_fanout(&gateway, n, c, &cx).await?; // warm-up
                let mut samples = Vec::with_capacity(s.runs);
                let mut direct = Vec::with_capacity(s.runs);
                // Alternate the composite and the same calls made directly.
                for _ in 0..s.runs {
                    samples.push(call(&gateway, &name, &args, &cx).await?);
                    direct.push(direct_fanout(&gateway, n, c, &cx).await?);
                }
                let direct_median = median(direct.iter().copied());
                let vs_direct = median(samples.iter().zip(&direct).map(|(x, d)| x.wall_ms - d));
                let waves = n.div_ceil(c) as f64;
                let r = row(
                    &name,
                    &samples,
                    |x| x.child("top") + waves * latency,
                    String::new(),
                );
                t.add_row([
                    n.to_string(),
                    c.to_string(),
                    format!("{:.1}", r.wall),
                    format!("{:.1}", r.ideal),
                    format!(
                        "{:.2} [{:.2}..{:.2}]",
                        r.overhead, r.overhead_min, r.overhead_max
                    ),
                    format!("{:.0}", r.overhead * 1000.0 / n as f64),
                    format!(
                        "{:.1} / {:.1}",
                        median(samples.iter().map(|x| x.child("top"))),
                        median(samples.iter().map(|x| x.child("analysis")))
                    ),
                    fmt_ms(direct_median),
                    fmt_ms(vs_direct),
                ]);
            }
        }
        println!();
        println!(
            "fan-out: sql.get_top_customers(limit) then cosmos.analyze_user_behavior per customer, \
             cosmos at --latency-ms {}; ideal = top call + ceil(n / concurrency) x {} ms; \
             \"same calls, no composite\" makes them through Gateway::call_tool with the same \
             concurrency (what the children really take here, server work included)",
            s.fanout_latency_ms, s.fanout_latency_ms
        );
        println!("{t}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    gateway.shutdown().await;
    outcome
}

async fn run(s: Settings) -> anyhow::Result<()> {
    let dir = ensure_binaries()?;
    let began = Instant::now();
    let (parallel_overhead, hit) = workshop(&dir, s).await?;
    fanout(&dir, s).await?;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!();
    println!(
        "parallel overhead vs slowest child: {parallel_overhead:.2} ms (aim < {AIM_PARALLEL_OVERHEAD_MS} ms) {}",
        verdict(parallel_overhead < AIM_PARALLEL_OVERHEAD_MS)
    );
    println!(
        "cache hit: {hit:.3} ms (aim < {AIM_CACHE_HIT_MS} ms) {}",
        verdict(hit < AIM_CACHE_HIT_MS)
    );
    println!(
        "measured in {:.1} s ({} cores)",
        began.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A filter argument that names something else skips the run.
    if let Some(filter) = args.iter().find(|a| !a.starts_with('-'))
        && !"composites".contains(filter.as_str())
    {
        return Ok(());
    }
    let settings = if args.iter().any(|a| a == "--bench") {
        Settings {
            runs: env_usize("COMPOSITES_RUNS", 5),
            hits: env_usize("COMPOSITES_HITS", 1000),
            workshop_latency_ms: 500,
            fanout_latency_ms: 50,
            customers: &[10, 100],
            concurrencies: &[10, 32],
        }
    } else {
        // `cargo test --benches`: a smoke pass that shows the bench still works.
        Settings {
            runs: 1,
            hits: 10,
            workshop_latency_ms: 20,
            fanout_latency_ms: 5,
            customers: &[10],
            concurrencies: &[10],
        }
    };
    // The gateway runs on the runtime the orchestrator uses (multi-threaded).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(settings))
}
